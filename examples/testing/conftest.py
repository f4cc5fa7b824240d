import pytest

pytest_plugins = ["redismpx.pytest_plugin"]


@pytest.fixture(autouse=True)
def _fresh_redis(redismpx_clean_server: object) -> None:
    """Every test starts with nothing subscribed and no keys on the session server."""
