"""neuroshot: neuron-aware active few-shot learning for locally hosted LLMs."""
