// Package deploy holds the files that run launcher in production, kept next
// to the code: the deploy script (deploy.sh), the systemd unit, nginx in
// front, a container image and pod, an Ansible rollout, the Prometheus
// configuration and alerting rules, and the Grafana dashboard. README.md
// here is the deploy chapter.
//
// It has no Go API. Its tests check those files with the real tools:
// shellcheck and a real supervisor for deploy.sh; systemd-analyze verify
// and a real NOTIFY_SOCKET for the unit; real nginx in front of ten
// upgrades under load; ansible-playbook against three local hosts; promtool
// for the rules; and a real Prometheus (see internal/promtest) evaluating
// every query of the dashboard.
package deploy
