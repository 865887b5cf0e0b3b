"""Models in and out: loading a pretrained classifier or decoder LM (``loading``, ``llm``) and the pruned or
physically shrunk models pruneformer saves, which plain ``transformers`` loads back (``saved``). The seam
where each model family's layers are described lives here."""
