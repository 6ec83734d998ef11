import pytest

from tests.data.fixtures import write_converted_data_dir


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """Every dataset the recipes read, converted from fixtures, so the preflight finds all data files."""
    return write_converted_data_dir(tmp_path_factory.mktemp("recipe-data"))
