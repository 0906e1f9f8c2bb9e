"""Phones over ADB: the connection (``connection``, ``keys``), what a phone is
(``facts``), the benchmark programs run on it (``runners``) and the bridge
backend that serves it like any other device (``bridge``)."""
