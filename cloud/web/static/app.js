// The dashboard's own script: progressive enhancement only; every page works without it.
// Features append their own sections below, each under a comment naming the feature.
"use strict";

// Forms with data-autosubmit send themselves when one of their selects changes (filters).
document.addEventListener("change", function (event) {
  var form = event.target.closest("form[data-autosubmit]");
  if (form && event.target.tagName === "SELECT") {
    form.requestSubmit();
  }
});

// htmx requests carry the page's CSRF token (from <meta name="csrf-token">, if the page has one).
document.addEventListener("htmx:configRequest", function (event) {
  var meta = document.querySelector('meta[name="csrf-token"]');
  if (meta && event.detail.verb !== "get") {
    event.detail.parameters["csrf_token"] = meta.content;
  }
});
