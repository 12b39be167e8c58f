"""A conversation with tools and a chat template that supports tools, shared by the tool tests."""

from __future__ import annotations

from tunesmith.tool_calls import ToolCall

# A small template in the manner of Qwen2.5's: it reads `tools`, writes each call as a <tool_call> block and
# gives tool results their own turn. Its tool header and tool turns differ from tunesmith's fallback format,
# so the tests can tell which one rendered.
TOOL_TEMPLATE = r"""
{%- if tools -%}
  {{- '<|im_start|>system\n' -}}
  {%- if messages[0].role == 'system' -%}{{- messages[0].content + '\n\n' -}}{%- endif -%}
  {{- 'Available functions:\n' -}}
  {%- for t in tools -%}{{- (t.function | tojson) + '\n' -}}{%- endfor -%}
  {{- '<|im_end|>\n' -}}
{%- elif messages[0].role == 'system' -%}
  {{- '<|im_start|>system\n' + messages[0].content + '<|im_end|>\n' -}}
{%- endif -%}
{%- for m in messages -%}
  {%- if m.role == 'assistant' -%}
    {{- '<|im_start|>assistant\n' -}}
    {%- if m.content -%}{{- m.content -}}{%- if m.tool_calls -%}{{- '\n' -}}{%- endif -%}{%- endif -%}
    {%- for c in m.tool_calls or [] -%}
      {{- '<tool_call>\n{"name": "' + c.function.name + '", "arguments": ' + (c.function.arguments | tojson) + '}\n</tool_call>' -}}
      {%- if not loop.last -%}{{- '\n' -}}{%- endif -%}
    {%- endfor -%}
    {{- '<|im_end|>\n' -}}
  {%- elif m.role == 'tool' -%}
    {{- '<|im_start|>tool\n' + m.content + '<|im_end|>\n' -}}
  {%- elif m.role != 'system' -%}
    {{- '<|im_start|>' + m.role + '\n' + m.content + '<|im_end|>\n' -}}
  {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\n' -}}{%- endif -%}
"""

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Current weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
PARIS = ToolCall("get_weather", {"city": "Paris"})
ZURICH = ToolCall("get_weather", {"city": "Zürich \"HB\""})


def tool_record(final="Paris 18°C, Zürich 12°C."):
    return {"id": "t:1", "tools": TOOLS, "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris and Zürich?"},
        {"role": "assistant", "content": "Checking both.", "tool_calls": [PARIS.to_openai("c1"), ZURICH.to_openai("c2")]},
        {"role": "tool", "tool_call_id": "c1", "name": "get_weather", "content": "18°C sunny"},
        {"role": "tool", "tool_call_id": "c2", "name": "get_weather", "content": "12°C rain"},
        {"role": "assistant", "content": final},
    ]}


def tokenizer_with_tool_template(model_dir):
    """The SmolLM2 tokenizer with :data:`TOOL_TEMPLATE` as its chat template."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.chat_template = TOOL_TEMPLATE
    return tok
