"""tunesmith: decide, prepare data, train, evaluate and deploy a fine-tuned LLM from one config file."""

__version__ = "0.1.0"
