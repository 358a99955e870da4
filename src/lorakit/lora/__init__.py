"""Model surgery: adapt any PyTorch or Hugging Face model with LoRA adapters."""
