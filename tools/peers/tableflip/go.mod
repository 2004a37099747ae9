module github.com/launcherd/launcher/tools/peers/tableflip

go 1.26

require github.com/cloudflare/tableflip v1.2.3
