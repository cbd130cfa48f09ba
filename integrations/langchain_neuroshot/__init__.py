"""LangChain integration of neuroshot."""
