"""Everything that needs the ``[llm]`` extra: a causal LM, its corpus, activations, LM metrics.

``language_model`` loads the model once per process; ``tokens`` and ``forward`` turn texts
into ids and run them (reading, replacing and skipping blocks); ``corpus`` reads the
labelled gensim texts; ``activations``, ``extractor`` and ``fetch`` are the public data
functions (re-exported by :mod:`sklearn_hsae.datasets`); ``ce_loss`` (its passes in
``splice``) and ``absorption`` are the language-model metrics (re-exported by
:mod:`sklearn_hsae.metrics`), ``autoencoder`` the estimator they evaluate; ``progress``
draws the bars of the long steps.

transformers is imported only when a model is loaded, so importing this package (and
with it ``datasets`` and ``metrics``) stays cheap without the extra.
"""
