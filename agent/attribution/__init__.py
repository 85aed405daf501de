"""Attribution of kernel events to pods and containers: cgroup paths (`paths`), pod metadata
from the API server (`kube`) or local registry files (`pods`), and the `Attributor` that the
agent's main loop feeds with events and `cgroup_mkdir` paths."""
