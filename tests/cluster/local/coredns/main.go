// Command coredns is CoreDNS built with only the plugins the local cluster's Corefile uses
// (dns.sh writes it): the full build links every cloud back end CoreDNS ships and takes far
// longer to compile for nothing.
//
//	bind kubernetes health ready errors log cache reload template
//
// plus the rest of the set kubeadm's default Corefile names (forward, loop, loadbalance,
// prometheus), so one binary can also serve a kubeadm-made cluster such as a kind node. A
// Corefile directive whose plugin is not linked in makes CoreDNS refuse to start, so a missing
// plugin shows at up.sh, never as a silent wrong answer.
package main

import (
	// dnsserver holds the directive order (which plugin sees a query first); linking only some
	// plugins keeps that order.
	_ "github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
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

func main() { coremain.Run() }
