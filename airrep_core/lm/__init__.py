"""The target LM: loading, tokenizer, data and batching, the response-token loss
(transformers and vLLM backends), subset fine-tuning, warm-up and the base model
(DESIGN.md §2 "Label generation")."""
