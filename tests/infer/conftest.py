"""One CPU thread for every inference test: the fits are many small ops, for which a
second thread only adds synchronisation (test_ratio's 1,500-step fit took 63 s with two
threads on a busy 2-core machine), and one thread keeps results reproducible."""
import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
