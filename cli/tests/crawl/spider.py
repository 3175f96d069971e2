"""A Scrapy spider that crawls a local site through the IPSX gate, the way a fleet would.

    scrapy runspider spider.py -a site=http://127.0.0.1:8000 -a gate=127.0.0.1:24000 \
        -a user=fleet-country-de -a pages=200 -a sessions=none -O out.json

sessions: "none" (one proxy URL for every request), "per-request" (session-N in the username
of request N) or any other value (that one session id for every request). Every answer becomes
an item: page, HTTP status, the body (the site answers with the IP the request came from) and
the gate's X-Ipsx-Exit header.
"""

import scrapy


class Crawl(scrapy.Spider):
    name = "crawl"
    custom_settings = {
        "LOG_LEVEL": "WARNING",
        "ROBOTSTXT_OBEY": False,
        "TELNETCONSOLE_ENABLED": False,
        "RETRY_ENABLED": False,
        "HTTPERROR_ALLOW_ALL": True,
        "CONCURRENT_REQUESTS": 16,
        "DOWNLOAD_TIMEOUT": 20,
        "COOKIES_ENABLED": False,
        "REQUEST_FINGERPRINTER_IMPLEMENTATION": "2.7",
    }

    def __init__(self, site, gate, user, pages="200", sessions="none", **kwargs):
        super().__init__(**kwargs)
        self.site = site
        self.gate = gate
        self.user = user
        self.pages = int(pages)
        self.sessions = sessions

    def username(self, n):
        if self.sessions == "none":
            return self.user
        if self.sessions == "per-request":
            return f"{self.user}-session-s{n}"
        return f"{self.user}-session-{self.sessions}"

    def start_requests(self):
        for n in range(self.pages):
            proxy = f"http://{self.username(n)}:x@{self.gate}"
            yield scrapy.Request(
                f"{self.site}/page/{n}",
                meta={"proxy": proxy, "page": n},
                dont_filter=True,
            )

    def parse(self, response):
        yield {
            "page": response.meta["page"],
            "status": response.status,
            "ip": response.text.strip(),
            "exit": response.headers.get("X-Ipsx-Exit", b"").decode(),
        }
