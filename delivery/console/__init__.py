"""The operator console under /dashboard/: dashboard, find a device, destination and delivery pages.

Login is required (the admin's login page). Viewers, operators and staff read every page; the
buttons that change something (test, pause, resume, send the batch, redeliver) answer only to
superusers, the `operator` group and staff holding the matching model permission.

- `access`: who may read and who may press which button.
- `pages`: the pages, reading through `delivery.observability.stats` and `delivery.console.lookup`.
- `actions`: the buttons, acting through the operator actions' services (`destinations.services`,
  `delivery.services`), the same ones the API and the admin call.
- `urls`: the routes, included by `aamdest.urls` under the `console` namespace.
"""
