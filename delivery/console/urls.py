"""The console's routes, under /dashboard/ (namespace `console`)."""

from django.urls import path

from delivery.console import actions, pages

app_name = "console"
urlpatterns = [
    path("", pages.dashboard, name="dashboard"),
    path("devices/", pages.device_search, name="device-search"),
    path("devices/<str:aam_uuid>/", pages.device_page, name="device"),
    path("destinations/<int:pk>/", pages.destination_page, name="destination"),
    path("destinations/<int:pk>/test/", actions.send_test, name="send-test"),
    path("destinations/<int:pk>/pause/", actions.pause, name="pause"),
    path("destinations/<int:pk>/resume/", actions.resume, name="resume"),
    path("destinations/<int:pk>/send-batch/", actions.send_batch, name="send-batch"),
    path("destinations/<int:pk>/close-circuit/", actions.close_circuit, name="close-circuit"),
    path("destinations/<int:pk>/redeliver-failed/", actions.redeliver_failed, name="redeliver-failed"),
    path("destinations/<int:pk>/resync/", actions.resync, name="resync"),
    path("deliveries/<int:pk>/", pages.delivery_page, name="delivery"),
    path("deliveries/<int:pk>/redeliver/", actions.redeliver, name="redeliver"),
]
