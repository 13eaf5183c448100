"""Two views: one starts an onboarding run with the sign-up, one answers its approval."""

from __future__ import annotations

from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from abstractruntime_celery import PayloadError, RunNotWaitingError, UnknownRunError
from abstractruntime_celery.contrib.django import get_runtime, start_run

from .models import Signup


@csrf_exempt  # an example API; keep CSRF protection in your own views
@require_POST
def signup(request: HttpRequest) -> JsonResponse:
    email = request.POST.get("email", "")
    if "@" not in email:
        return JsonResponse({"error": "email required"}, status=400)
    with transaction.atomic():
        # The run starts only if this transaction commits: no run for a sign-up rolled back.
        run_id = start_run("onboarding", {"email": email})
        row = Signup.objects.create(email=email, run_id=run_id)
    return JsonResponse({"signup": row.pk, "run_id": run_id}, status=201)


@require_GET
def run_status(request: HttpRequest, run_id: str) -> JsonResponse:
    try:
        state = get_runtime().get_state(run_id)
    except (UnknownRunError, PayloadError):
        return JsonResponse({"error": "no such run"}, status=404)
    waiting = state.waiting
    return JsonResponse({"run_id": run_id, "status": state.status.value, "output": state.output,
                         "prompt": waiting.prompt if waiting is not None else None})


@csrf_exempt
@require_POST
def answer(request: HttpRequest, run_id: str) -> JsonResponse:
    approved = request.POST.get("approved", "") in ("1", "yes", "true")
    try:
        # wait=False: the answer is durable when respond returns; a worker applies it.
        get_runtime().respond(run_id, {"approved": approved}, wait=False)
    except (UnknownRunError, PayloadError):
        return JsonResponse({"error": "no such run"}, status=404)
    except RunNotWaitingError as exc:
        return JsonResponse({"error": str(exc)}, status=409)
    return JsonResponse({"run_id": run_id, "answered": {"approved": approved}}, status=202)
