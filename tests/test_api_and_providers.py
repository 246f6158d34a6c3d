"""The public API surface and the provider registry."""

from __future__ import annotations

import importlib.util

import pytest

import configurable_agents
from configurable_agents import MissingExtraError, UserError
from configurable_agents.config.schema import PROVIDERS as SCHEMA_PROVIDERS
from configurable_agents.config.schema import LLMConfig
from configurable_agents.providers import PROVIDERS, create_chat_model, merge_llm

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
