//! Network namespaces as test hosts (the "test LAN"). Filled in by the mdns work.
