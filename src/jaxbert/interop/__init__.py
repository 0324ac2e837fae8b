"""Hugging Face transformers: export and import (hf)."""
