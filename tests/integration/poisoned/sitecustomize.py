"""Put first on PYTHONPATH by the end to end isolation tests: every process
started with it (``learnstream work`` and the workers it spawns) installs the
faults that ``LEARNSTREAM_TEST_POISON`` names (see tests/poison.py)."""

from tests.poison import install_from_environment

install_from_environment()
