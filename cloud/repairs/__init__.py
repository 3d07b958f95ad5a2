"""Repairs: a device's way from a repair request to its replacement or repair and back.

- ``rules``        warranty, the repair's state machine, shipments (pure)
- ``tables``       the rows: repairs, their timeline, their shipments
- ``queries``      the reads
- ``notices``      the texts of the mails each step sends (translated)
- ``slip``         the packing slip of a shipment (PDF)
- ``access``       who may read a repair
- ``views``        the repair as its readers see it
- ``journal``      each step's timeline entry, audit row and mail
- ``payments``     accepting and paying a quote, billing's callbacks, cancelling
- ``service``      request, step, quote, ship, reship, packing slips (money: ``payments``)
- ``deps``         the service a route depends on
- ``schemas``      the HTTP bodies
- ``routes``       ``/repairs``
- ``pages``        the dashboard: ``/repairs``, ``/repairs/new``, ``/repairs/{id}``
"""

__all__: list[str] = []
