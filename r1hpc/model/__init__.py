"""The tiny base model: tokenizer (`tokenizer.py`), Qwen2-style model factory (`factory.py`) and
its pretraining corpus (`pretrain_corpus.py`)."""
