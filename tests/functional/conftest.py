"""Markers of the functional tests."""


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "triton: runs the Triton angle kernel (under Triton's CPU interpreter where no GPU is present)"
    )
