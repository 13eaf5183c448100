from django.db import models


class Signup(models.Model):
    """A sign-up waiting for approval; ``run_id`` is its onboarding run."""

    email = models.EmailField()
    run_id = models.CharField(max_length=128, unique=True)
    created = models.DateTimeField(auto_now_add=True)
