"""The dashboard's plumbing: templates, language, forms, security headers, static files.

Pages themselves live in each feature beside its routes (``cloud/<feature>/pages.py``
and ``cloud/<feature>/templates/<feature>/``); this package imports no feature.

- :mod:`cloud.web.templates`: one Jinja2 environment (autoescaping) over every
  feature's templates, and :func:`render`;
- :mod:`cloud.web.i18n`: gettext catalogues (Babel), one per language, merged
  from every feature's ``locale/`` folder;
- :mod:`cloud.web.forms`: CSRF tokens and :data:`CheckedForm`;
- :mod:`cloud.web.flash`: one-shot messages after a redirect;
- :mod:`cloud.web.security`: the Content Security Policy and other headers;
- :mod:`cloud.web.assets`: where the front-end libraries (npm) are, and mounting them;
- :mod:`cloud.web.docs`: the API docs page, served from our own assets.
"""

__all__: list[str] = []
