// Command echo serves an echo router under the launcher.
package main

import (
	"context"
	"flag"
	"log"

	"github.com/labstack/echo/v4"

	"github.com/launcherd/launcher/launcher"
)

func main() {
	flag.Parse() // no flags of its own; -h prints the usage
	e := echo.New()
	e.GET("/", func(c echo.Context) error { return c.String(200, "hello\n") })

	app, err := launcher.New(launcher.Options{Addr: "127.0.0.1:8080"})
	if err != nil {
		log.Fatal(err)
	}
	// Not e.Start: the launcher owns the listeners. *echo.Echo is an
	// http.Handler.
	if err := app.Run(context.Background(), e); err != nil {
		log.Fatal(err)
	}
}
