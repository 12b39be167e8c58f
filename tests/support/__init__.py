"""Helpers shared by the tests; no tests here (pytest collects only test_*.py).

Importable as ``support`` because tests/conftest.py puts tests/ on sys.path (pytest's default "prepend"
import mode). A test module imports helpers from here, never from another test module.

  adapters       PEFT adapters on tiny models; the autouse ``one_torch_thread`` fixture (applies where imported)
  data_files     write input rows, prepare them, check every row is accounted for
  fake_openai    FakeOpenAI, a real OpenAI-compatible HTTP server on 127.0.0.1
  report_tables  the tables of report.html and report.md, read back
  tickets        synthetic support-ticket classification rows (advise tests)
  tool_chat      a conversation with tools and a chat template that supports tools
  train_runs     small `tunesmith train` runs through the CLI in a subprocess
"""
