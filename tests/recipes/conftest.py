import pytest

from tests.data.fixtures import write_converted_data_dir
from tests.vl.fixtures import write_converted_vl_dir


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """Every dataset the recipes read (text and vision-language), converted from fixtures into one folder, so the
    preflight finds all data files."""
    root = tmp_path_factory.mktemp("recipe-data")
    out_dir = write_converted_data_dir(root)
    assert write_converted_vl_dir(root) == out_dir
    return out_dir
