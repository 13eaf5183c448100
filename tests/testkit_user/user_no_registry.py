"""A user who forgot to override arc_registry: the fixture says what to write."""


def test_forgot_the_registry(arc_runtime):
    pass
