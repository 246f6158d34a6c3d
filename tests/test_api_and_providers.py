"""The public API surface and the provider registry."""

from __future__ import annotations

import importlib.util

import pytest

import configurable_agents
from configurable_agents import MissingExtraError, UserError
from configurable_agents.config.schema import LOCAL_MODELS, TOOL_PROVIDERS, LLMConfig
from configurable_agents.config.schema import PROVIDERS as SCHEMA_PROVIDERS
from configurable_agents.providers import PROVIDERS, create_chat_model, merge_llm
from configurable_agents.providers.base import model_kwargs

from conftest import MINIMAL


def test_all_is_complete_and_importable():
    public = {
        name
        for name, value in vars(configurable_agents).items()
        if not name.startswith("_") and not isinstance(value, type(configurable_agents))
    }
    assert public <= set(configurable_agents.__all__)
    for name in configurable_agents.__all__:
        assert hasattr(configurable_agents, name), name


def test_every_schema_provider_is_registered():
    assert set(PROVIDERS) == set(SCHEMA_PROVIDERS)
    # validation's list of tool-calling providers says what each provider module says
    assert {name for name, info in PROVIDERS.items() if info.supports_tools} == TOOL_PROVIDERS
    hosted = {"google", "openai", "anthropic", "ollama"}
    assert {name for name, info in PROVIDERS.items() if info.native_async} == hosted
    # validation's list of bundled local models is the provider's, default first
    from configurable_agents.providers.local import BUNDLED, DEFAULT_MODEL

    assert tuple(BUNDLED) == LOCAL_MODELS and LOCAL_MODELS[0] == DEFAULT_MODEL


def test_model_kwargs_rename_default_and_fix():
    llm = LLMConfig(provider="openai", temperature=0.3, max_tokens=50, seed=None)
    names = {"model": "model", "temperature": "temperature", "max_tokens": "max_completion_tokens"}
    names["seed"] = "seed"
    kwargs = model_kwargs(llm, names, {"model": "gpt-4o-mini"}, max_retries=0)
    assert kwargs == {
        "model": "gpt-4o-mini",
        "temperature": 0.3,
        "max_completion_tokens": 50,
        "max_retries": 0,
    }


def test_local_and_test_models_take_their_settings():
    from configurable_agents.providers import local, test

    model = local.create(LLMConfig(provider="local", n_ctx=512, max_tokens=9, temperature=0))
    assert (model.model_name, model.n_ctx, model.max_tokens, model.temperature) == (
        "smollm2-135m-instruct",
        512,
        9,
        0,
    )
    default = local.create(LLMConfig(provider="local", model_path="/m/tiny.gguf"))
    assert (default.model_name, default.n_ctx, default.temperature, default.max_tokens) == (
        "tiny",
        2048,
        0.7,
        512,
    )
    dry = test.create(LLMConfig(provider="test", latency_ms=5, responses={"a": [{"x": 1}]}))
    assert (dry.model_name, dry.latency_ms, dry.responses) == ("test", 5, {"a": [{"x": 1}]})


def test_merge_llm_node_overrides_base():
    base = LLMConfig(provider="test", model="gemini-2.5-flash", temperature=0.2)
    merged = merge_llm(base, LLMConfig(temperature=0.9))
    assert (merged.provider, merged.model, merged.temperature) == ("test", "gemini-2.5-flash", 0.9)
    # another provider does not inherit the base model name
    other = merge_llm(base, LLMConfig(provider="openai"))
    assert other.provider == "openai" and other.model is None
    assert merge_llm(LLMConfig(), None).provider == "local"


@pytest.mark.parametrize("name", ["google", "openai", "anthropic", "ollama"])
def test_missing_provider_package_names_the_install_command(name):
    info = PROVIDERS[name]
    if importlib.util.find_spec(info.module) is not None:
        pytest.skip(f"{info.package} is installed here")
    with pytest.raises(MissingExtraError) as exc:
        create_chat_model(LLMConfig(provider=name))
    assert isinstance(exc.value, ImportError) and isinstance(exc.value, UserError)
    assert f'pip install "configurable-agents[{name}]"' in str(exc.value)


def test_api_key_problem_is_reported(monkeypatch):
    for var in PROVIDERS["anthropic"].api_key_env:
        monkeypatch.delenv(var, raising=False)
    problems = dict(PROVIDERS["anthropic"].missing())
    assert "provider 'anthropic' needs an API key and ANTHROPIC_API_KEY is not set" in problems
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test")
    assert not any("API key" in m for m, _ in PROVIDERS["anthropic"].missing())


def test_output_schema_defaults_to_state_types(write_workflow):
    text = MINIMAL.replace("    output_schema:\n      fields: [{name: article, type: str}]\n", "")
    result = configurable_agents.run_workflow(write_workflow(text), {"topic": "x"})
    assert result.succeeded and result.outputs == {"article": "test article"}
