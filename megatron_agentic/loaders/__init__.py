"""Alternative training batch loaders (``data.loader``): ``dali`` (optional extra ``[dali]``)."""
