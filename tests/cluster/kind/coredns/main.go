// Command coredns is CoreDNS with only the plugins the Corefile kubeadm writes uses, so the
// kind node image's DNS builds from the Go module proxy without CoreDNS's cloud back ends.
//
// The plugin list must cover every directive of kubeadm's Corefile (errors, health, ready,
// kubernetes, prometheus, forward, cache, loop, reload, loadbalance), log for debugging, and
// template, with which up.sh answers every name outside the cluster NXDOMAIN instead of
// forwarding it; a directive without its plugin makes CoreDNS refuse the Corefile at start.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/metrics"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
	_ "github.com/coredns/coredns/plugin/template"
)

// The server runs plugins in the order of dnsserver.Directives (CoreDNS's full list); the
// plugins not linked in are never named by the Corefile, so the full order still holds.
var _ = dnsserver.Directives

func main() { coremain.Run() }
