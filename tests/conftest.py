"""Tiny real components (random weights), built once per test session, saved in diffusers layout."""

import os

import pytest
import torch
from diffusers.utils import logging as diffusers_logging

from harivo.models import HarivoAdapter, HarivoUNet
from harivo.utils.tiny import tiny_stable_diffusion

diffusers_logging.set_verbosity_error()
if os.environ.get("PYTEST_XDIST_WORKER"):  # one thread per worker: the workers share the machine's cores
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def same_thread_count():
    """A test (or a benchmark's `main` it calls) that changes torch's thread count must not change it for the tests
    after it: two workers with two threads each on two cores run many times slower than with one each."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def fresh_accelerator_state():
    """Accelerate keeps one global state per process, and a test that trains leaves it set (e.g. without mixed
    precision); the parallel workers run tests of every module in any order, so each test ends by clearing it."""
    yield
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.fixture(scope="session")
def tiny_sd():
    return tiny_stable_diffusion()


@pytest.fixture(scope="session")
def base_dir(tiny_sd, tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "tiny-sd"
    tiny_sd.save_pretrained(path)
    return path


@pytest.fixture
def make_adapter(tiny_sd):
    def make(num_frame_tokens: int = 0, **kwargs) -> HarivoAdapter:
        torch.manual_seed(0)
        kwargs.setdefault("max_frames", 8)
        kwargs.setdefault("motion_num_attention_heads", 2)
        kwargs.setdefault("mapping_hidden_channels", 8)
        kwargs.setdefault("projection_dim", 16)
        return HarivoAdapter.from_unet(tiny_sd.unet, num_frame_tokens=num_frame_tokens, **kwargs)

    return make


@pytest.fixture
def make_model(tiny_sd, make_adapter):
    def make(num_frame_tokens: int = 0, **kwargs) -> HarivoUNet:
        return HarivoUNet.from_unet2d(tiny_sd.unet, make_adapter(num_frame_tokens, **kwargs))

    return make


@pytest.fixture(scope="session")
def text_embeds(tiny_sd):
    prompts = ["a small red circle moving left", "a large blue square moving up"]
    ids = tiny_sd.tokenizer(prompts, padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        return tiny_sd.text_encoder(ids)[0]  # (2, 77, 32)


@pytest.fixture(scope="session")
def mapped_adapter_path(tiny_sd, tmp_path_factory):
    """An adapter whose mapping network is not the identity (as after training)."""
    path = tmp_path_factory.mktemp("cli") / "mapped"
    adapter = HarivoAdapter.from_unet(tiny_sd.unet, max_frames=8, motion_num_attention_heads=2)
    with torch.no_grad():
        adapter.mapping_network.layers[-1].weight.normal_(std=0.05)
    adapter.save_pretrained(path)
    return path
