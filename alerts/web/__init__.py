"""The fleet-manager page: server-rendered HTML, one small script and stylesheet, no CDN."""
