"""GET /api/v1/profiles/{aam_uuid}/ (stub: replaced by the API work)."""

from rest_framework.views import APIView


class ProfileView(APIView):
    pass
