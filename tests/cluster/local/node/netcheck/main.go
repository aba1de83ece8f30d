// netcheck proves the real node's pod network and Service routing without any registry image:
//
//	netcheck serve ADDR      answers every GET with "netcheck <hostname> <path>"
//	netcheck get URL [TRIES] fetches URL (retrying once a second), prints the body, exit 0 on 200
//	netcheck lookup NAME [SERVER]
//	                         resolves NAME (through the DNS server at SERVER, host:port, if given;
//	                         never the host's resolver then) and prints its addresses, exit 0; for a
//	                         name the server says does not exist it prints "not found", exit 3
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: netcheck serve ADDR | netcheck get URL [TRIES] | netcheck lookup NAME [SERVER]")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "serve":
		host, _ := os.Hostname()
		http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "netcheck %s %s\n", host, r.URL.Path)
		})
		fmt.Println("listening on", os.Args[2])
		if err := http.ListenAndServe(os.Args[2], nil); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	case "get":
		tries := 1
		if len(os.Args) > 3 {
			tries, _ = strconv.Atoi(os.Args[3])
		}
		client := &http.Client{Timeout: 5 * time.Second}
		var last error
		for i := 0; i < tries; i++ {
			if i > 0 {
				time.Sleep(time.Second)
			}
			resp, err := client.Get(os.Args[2])
			if err != nil {
				last = err
				continue
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				last = fmt.Errorf("HTTP %d: %s", resp.StatusCode, body)
				continue
			}
			fmt.Print(string(body))
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "netcheck get failed:", last)
		os.Exit(1)
	case "lookup":
		os.Exit(lookup(os.Args[2], os.Args[3:]))
	default:
		fmt.Fprintln(os.Stderr, "unknown command", os.Args[1])
		os.Exit(2)
	}
}

func lookup(name string, server []string) int {
	resolver := net.DefaultResolver
	if len(server) > 0 {
		// The Go resolver, its every query sent to that server only (TCP or UDP as it chooses).
		resolver = &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{Timeout: 3 * time.Second}).DialContext(ctx, network, server[0])
		}}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	addrs, err := resolver.LookupHost(ctx, name)
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) && dnsErr.IsNotFound {
		fmt.Println("not found")
		return 3
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "netcheck lookup failed:", err)
		return 1
	}
	fmt.Println(strings.Join(addrs, " "))
	return 0
}
