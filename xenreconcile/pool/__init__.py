"""Pool mode: several Dom0s on shared storage, each guest on at most one of them,
decided in etcd (docs/pool.md). Nothing here is imported unless `pool` is configured."""
