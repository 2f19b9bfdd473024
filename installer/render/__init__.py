"""Every file airlock writes onto a node, rendered from values through a serializer (no templates, no string splicing).

`units` + `unitfiles`: systemd units; `kubeadm_config`: kubeadm's Init/Join/Cluster configuration;
`containerd_config`: config.toml merged in place (hosts.toml: `bundle.containerd`, the one writer `airlock push` uses too); `crictl`: /etc/crictl.yaml;
`flannel`: the bundled flannel manifest edited for node.yaml; `kubevip`: kube-vip's static pod.
Nothing here writes to disk or runs a command: the phases hand the text to `Host`.
"""
