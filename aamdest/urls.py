from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from delivery.api.deliveries import DeliveryViewSet
from delivery.api.events import EventsView
from delivery.api.profiles import ProfileView
from delivery.observability.health import healthz, readyz
from delivery.observability.metrics import metrics
from destinations.api import DestinationViewSet, MappingViewSet, SegmentViewSet

router = DefaultRouter()
router.register("destinations", DestinationViewSet, basename="destination")
router.register("mappings", MappingViewSet, basename="mapping")
router.register("segments", SegmentViewSet, basename="segment")
router.register("deliveries", DeliveryViewSet, basename="delivery")

urlpatterns = [
    path("api/v1/events/", EventsView.as_view(), name="events"),
    path("api/v1/profiles/<str:aam_uuid>/", ProfileView.as_view(), name="profile"),
    path("api/v1/", include(router.urls)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(next_page="login"), name="logout"),
    path("admin/", admin.site.urls),
    path("dashboard/", include("delivery.console.urls", namespace="console")),
    path("metrics", metrics, name="metrics"),
]
