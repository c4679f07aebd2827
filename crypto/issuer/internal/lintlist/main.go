package main

import (
	"fmt"
	"os"
	"sort"

	"github.com/zmap/zlint/v3/lint"
	_ "github.com/zmap/zlint/v3/lints/apple"
	_ "github.com/zmap/zlint/v3/lints/cabf_br"
	_ "github.com/zmap/zlint/v3/lints/cabf_cs_br"
	_ "github.com/zmap/zlint/v3/lints/cabf_ev"
	_ "github.com/zmap/zlint/v3/lints/cabf_smime_br"
	_ "github.com/zmap/zlint/v3/lints/chrome"
	_ "github.com/zmap/zlint/v3/lints/community"
	_ "github.com/zmap/zlint/v3/lints/etsi"
	_ "github.com/zmap/zlint/v3/lints/mozilla"
	_ "github.com/zmap/zlint/v3/lints/rfc"
)

func main() {
	r := lint.GlobalRegistry()
	count := map[lint.LintSource]int{}
	for _, l := range r.CertificateLints().Lints() {
		count[l.Source]++
		if len(os.Args) > 1 && string(l.Source) == os.Args[1] {
			fmt.Printf("%s\t%s\t%s\n", l.Name, l.Citation, l.Description)
		}
	}
	var ks []string
	for k := range count {
		ks = append(ks, string(k))
	}
	sort.Strings(ks)
	for _, k := range ks {
		fmt.Println(k, count[lint.LintSource(k)])
	}
}
