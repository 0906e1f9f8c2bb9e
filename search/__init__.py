"""Hardware-aware architecture search against a named device.

- :mod:`~edgelat.search.space`: the :class:`SearchSpace` contract (genotypes,
  strings, encodings, kernel decompositions, FLOPs/params, export);
- :mod:`~edgelat.search.spaces`: ofa-mbv3, proxyless, fbnet, nasbench201 and
  YAML-defined spaces (``get_space``);
- :mod:`~edgelat.search.objective`: the accuracy side (proxy, CSV, function);
- :mod:`~edgelat.search.evaluate`: batch metrics and constraints;
- :mod:`~edgelat.search.evolution` / :mod:`~edgelat.search.pareto`: the strategies;
- :mod:`~edgelat.search.sources`, :mod:`~edgelat.search.validate`,
  :mod:`~edgelat.search.job`, :mod:`~edgelat.search.report`: device figures,
  on-device validation, the end-to-end job and its outputs.
"""
