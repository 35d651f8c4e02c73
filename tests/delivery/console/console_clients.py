"""What the console tests act through: logged-in clients with a role, a task that records calls, messages."""

from __future__ import annotations

from django.contrib.auth.models import Group, User
from django.test import Client


def client_with_role(username: str, *, group: str | None = None, **flags: bool) -> Client:
    """A client logged in as a new user, in `group` if given, with `flags` such as `is_staff`."""
    user = User.objects.create_user(username, **flags)  # no password: hashing one takes a second
    if group:
        user.groups.add(Group.objects.get_or_create(name=group)[0])
    client = Client()
    client.force_login(user)
    client.user = user
    return client


class FakeTask:
    """Records `.delay()` calls instead of reaching the broker."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def delay(self, *args: object) -> None:
        self.calls.append(args)


def messages_of(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]
