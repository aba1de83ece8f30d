// Command noderoutes is the kind cluster's pod network: a DaemonSet (host network) that gives
// its node a CNI configuration for the node's pod CIDR and routes every other node's pod CIDR
// via that node's InternalIP. The nodes share one Docker bridge, so a route per node is all
// pod-to-pod traffic across nodes needs; no encapsulation, no NAT.
//
// Invariants: it only ever touches routes to other nodes' pod CIDRs (added with its own
// protocol number, so a restart finds and reconciles its own routes and nothing else) and the
// one CNI file it owns. Each pass is idempotent: list nodes, compute the wanted state, apply the
// difference. Every API call has a timeout and a response-size cap.
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/vishvananda/netlink"
)

const (
	saDir = "/var/run/secrets/kubernetes.io/serviceaccount"
	// routeProtocol marks the routes this program owns (any value unused by the kernel and
	// the usual routing daemons; see /etc/iproute2/rt_protos).
	routeProtocol = netlink.RouteProtocol(183)
	maxBody       = 16 << 20
	interval      = 5 * time.Second
)

type nodeList struct {
	Items []struct {
		Metadata struct {
			Name string `json:"name"`
		} `json:"metadata"`
		Spec struct {
			PodCIDR string `json:"podCIDR"`
		} `json:"spec"`
		Status struct {
			Addresses []struct {
				Type    string `json:"type"`
				Address string `json:"address"`
			} `json:"addresses"`
		} `json:"status"`
	} `json:"items"`
}

// wanted is one pass's decision: this node's pod CIDR and the gateway of every other one.
type wanted struct {
	ownCIDR string
	routes  map[string]net.IP // pod CIDR -> the owning node's InternalIP
}

func decide(nodes nodeList, self string) (wanted, error) {
	w := wanted{routes: map[string]net.IP{}}
	for _, n := range nodes.Items {
		if n.Spec.PodCIDR == "" {
			continue // not allocated yet; the next pass sees it
		}
		if _, _, err := net.ParseCIDR(n.Spec.PodCIDR); err != nil {
			return w, fmt.Errorf("node %s: pod CIDR %q: %w", n.Metadata.Name, n.Spec.PodCIDR, err)
		}
		if n.Metadata.Name == self {
			w.ownCIDR = n.Spec.PodCIDR
			continue
		}
		for _, a := range n.Status.Addresses {
			if ip := net.ParseIP(a.Address); a.Type == "InternalIP" && ip != nil && ip.To4() != nil {
				w.routes[n.Spec.PodCIDR] = ip
			}
		}
	}
	return w, nil
}

// cniConfig is the node's network configuration: a veth per pod with host-local addresses
// from the node's pod CIDR (ptp routes each pod from the host, so Services hairpin without a
// bridge), and portmap for hostPort.
func cniConfig(podCIDR string) []byte {
	conf := map[string]any{
		"cniVersion": "1.0.0",
		"name":       "mlops-kind",
		"plugins": []any{
			map[string]any{
				"type": "ptp",
				"mtu":  1500,
				"ipam": map[string]any{
					"type":   "host-local",
					"ranges": []any{[]any{map[string]any{"subnet": podCIDR}}},
					"routes": []any{map[string]any{"dst": "0.0.0.0/0"}},
				},
			},
			map[string]any{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}},
		},
	}
	b, _ := json.MarshalIndent(conf, "", "  ")
	return append(b, '\n')
}

type apiClient struct {
	http  *http.Client
	base  string
	token string
}

func newAPIClient() (*apiClient, error) {
	host, port := os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT")
	if host == "" || port == "" {
		return nil, fmt.Errorf("KUBERNETES_SERVICE_HOST/PORT unset: not running in a pod")
	}
	ca, err := os.ReadFile(filepath.Join(saDir, "ca.crt"))
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return nil, fmt.Errorf("no certificate in %s/ca.crt", saDir)
	}
	return &apiClient{
		http: &http.Client{
			Timeout:   10 * time.Second,
			Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}},
		},
		base: "https://" + net.JoinHostPort(host, port),
	}, nil
}

func (c *apiClient) nodes(ctx context.Context) (nodeList, error) {
	var out nodeList
	// The token is rotated by the kubelet: read it for each request.
	token, err := os.ReadFile(filepath.Join(saDir, "token"))
	if err != nil {
		return out, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/api/v1/nodes", nil)
	if err != nil {
		return out, err
	}
	req.Header.Set("Authorization", "Bearer "+string(bytes.TrimSpace(token)))
	resp, err := c.http.Do(req)
	if err != nil {
		return out, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	if err != nil {
		return out, err
	}
	if len(body) > maxBody {
		return out, fmt.Errorf("node list larger than %d bytes", maxBody)
	}
	if resp.StatusCode != http.StatusOK {
		return out, fmt.Errorf("GET /api/v1/nodes: %s: %.200s", resp.Status, body)
	}
	return out, json.Unmarshal(body, &out)
}

// writeIfChanged replaces path atomically, and only when its content differs, so containerd
// sees one complete file and no churn.
func writeIfChanged(path string, content []byte) (bool, error) {
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, content) {
		return false, nil
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, content, 0o644); err != nil {
		return false, err
	}
	return true, os.Rename(tmp, path)
}

func applyRoutes(w wanted) error {
	current, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: routeProtocol}, netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		return fmt.Errorf("listing routes: %w", err)
	}
	for _, r := range current {
		if gw, ok := w.routes[r.Dst.String()]; !ok || !gw.Equal(r.Gw) {
			if err := netlink.RouteDel(&r); err != nil {
				return fmt.Errorf("deleting route %s: %w", r.Dst, err)
			}
			log.Printf("route %s via %s removed", r.Dst, r.Gw)
		}
	}
	for cidr, gw := range w.routes {
		_, dst, _ := net.ParseCIDR(cidr)
		if err := netlink.RouteReplace(&netlink.Route{Dst: dst, Gw: gw, Protocol: routeProtocol}); err != nil {
			return fmt.Errorf("route %s via %s: %w", cidr, gw, err)
		}
	}
	return nil
}

func pass(ctx context.Context, c *apiClient, self, confPath string, known map[string]string) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	nodes, err := c.nodes(ctx)
	if err != nil {
		return err
	}
	w, err := decide(nodes, self)
	if err != nil {
		return err
	}
	if w.ownCIDR != "" {
		changed, err := writeIfChanged(confPath, cniConfig(w.ownCIDR))
		if err != nil {
			return fmt.Errorf("writing %s: %w", confPath, err)
		}
		if changed {
			log.Printf("wrote %s for pod CIDR %s", confPath, w.ownCIDR)
		}
	}
	if err := applyRoutes(w); err != nil {
		return err
	}
	for cidr, gw := range w.routes {
		if known[cidr] != gw.String() {
			log.Printf("route %s via %s", cidr, gw)
			known[cidr] = gw.String()
		}
	}
	return nil
}

func main() {
	log.SetFlags(log.LstdFlags | log.LUTC)
	self := os.Getenv("NODE_NAME")
	confPath := os.Getenv("CNI_CONFIG")
	if self == "" || confPath == "" {
		log.Fatal("NODE_NAME and CNI_CONFIG must be set")
	}
	c, err := newAPIClient()
	if err != nil {
		log.Fatal(err)
	}
	known := map[string]string{}
	for {
		if err := pass(context.Background(), c, self, confPath, known); err != nil {
			log.Printf("pass failed (retrying in %s): %v", interval, err)
		}
		time.Sleep(interval)
	}
}
