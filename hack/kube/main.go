// Command kube is a multi-call binary for the DetectionJob test harness.
//
// It links kube-apiserver, kube-controller-manager, kubectl and the node's
// programs (kubelet, kube-scheduler, kube-proxy) from k8s.io/kubernetes (the
// version pinned in go.mod) plus a minimal etcd server
// built on go.etcd.io/etcd/server/v3/embed. The sub-command is chosen by the
// name the binary is invoked as (hack/build-binaries.sh creates symlinks), or
// by the first argument: `kube kube-apiserver --help`.
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	_ "time/tzdata" // CronJob time zones, as in the upstream mains

	"k8s.io/component-base/cli"
	"k8s.io/component-base/logs"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	kubectlcmd "k8s.io/kubectl/pkg/cmd"
	kubectlutil "k8s.io/kubectl/pkg/cmd/util"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	proxy "k8s.io/kubernetes/cmd/kube-proxy/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
	kubelet "k8s.io/kubernetes/cmd/kubelet/app"
)

var commands = map[string]func(args []string) int{
	"kube-apiserver": func([]string) int {
		return cli.Run(apiserver.NewAPIServerCommand())
	},
	"kube-controller-manager": func([]string) int {
		return cli.Run(controllermanager.NewControllerManagerCommand())
	},
	"kubectl": func(args []string) int {
		logs.GlogSetter(kubectlcmd.GetLogVerbosity(args)) //nolint:errcheck
		if err := cli.RunNoErrOutput(kubectlcmd.NewDefaultKubectlCommand()); err != nil {
			kubectlutil.CheckErr(err)
		}
		return 0
	},
	"kube-scheduler": func([]string) int {
		return cli.Run(scheduler.NewSchedulerCommand())
	},
	"kube-proxy": func([]string) int {
		return cli.Run(proxy.NewProxyCommand())
	},
	"kubelet": func([]string) int {
		return cli.Run(kubelet.NewKubeletCommand(context.Background()))
	},
	"etcd": runEtcd,
}

func main() {
	name := filepath.Base(os.Args[0])
	if _, ok := commands[name]; !ok && len(os.Args) > 1 {
		if _, ok := commands[os.Args[1]]; ok {
			// `kube <command> args...`: drop our own name so cobra sees the
			// command's arguments exactly as the upstream binary would.
			name = os.Args[1]
			os.Args = append([]string{name}, os.Args[2:]...)
		}
	}
	run, ok := commands[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "usage: kube {kube-apiserver|kube-controller-manager|kubectl|etcd|kubelet|kube-scheduler|kube-proxy} [args...]\n")
		os.Exit(2)
	}
	os.Exit(run(os.Args))
}
