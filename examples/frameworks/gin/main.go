// Command gin serves a gin router under the launcher.
package main

import (
	"context"
	"flag"
	"log"

	"github.com/gin-gonic/gin"

	"github.com/launcherd/launcher/launcher"
)

func main() {
	flag.Parse() // no flags of its own; -h prints the usage
	r := gin.New()
	r.GET("/", func(c *gin.Context) { c.String(200, "hello\n") })

	app, err := launcher.New(launcher.Options{Addr: "127.0.0.1:8080"})
	if err != nil {
		log.Fatal(err)
	}
	if err := app.Run(context.Background(), r); err != nil { // *gin.Engine is an http.Handler
		log.Fatal(err)
	}
}
