"""Property-based tests (hypothesis): merge rules, documents and batches against CONTRACT §1 and §2."""
