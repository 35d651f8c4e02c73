"""GET /healthz (stub: replaced by the API work)."""

from django.http import JsonResponse


def healthz(request):
    return JsonResponse({"status": "unknown"}, status=503)
