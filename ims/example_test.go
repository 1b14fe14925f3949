package ims_test

import (
	"context"
	"fmt"

	"github.com/sbps-marshal/sbps-marshal/ims"
	"github.com/sbps-marshal/sbps-marshal/ims/imstest"
)

// Example lists IMS images and applies the tagging rule, against the test
// server.
func Example() {
	srv, err := imstest.Start(imstest.Options{}, imstest.ListenOptions{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer srv.Close()
	srv.Put(imstest.Image{Name: "compute", Metadata: map[string]string{ims.TagKey: ims.TagValue}})
	srv.Put(imstest.Image{Name: "uan"})

	c, err := ims.New(ims.Config{BaseURL: srv.ImagesURL(), HTTPClient: srv.Client(), Token: ims.NoToken{}})
	if err != nil {
		fmt.Println(err)
		return
	}
	l, err := c.List(context.Background())
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, img := range l.Images {
		ok, _ := ims.Projectable(img, true)
		fmt.Println(img.Name, ok)
	}
	// Output:
	// compute true
	// uan false
}
