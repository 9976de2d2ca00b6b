"""Training batch loaders (``data.loader``): ``torch`` (:mod:`~megatron_agentic.loaders.torch_loader`, the default) and
``dali`` (:mod:`~megatron_agentic.loaders.dali`, optional extra ``[dali]``), both built on the shared schedule of
:mod:`~megatron_agentic.loaders.batches`; :func:`megatron_agentic.loaders.torch_loader.build_loader` picks one."""
