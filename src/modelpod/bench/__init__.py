"""``modelpod bench``: a load generator for modelpod and any KServe v2 server (a tool, not the SDK)."""
