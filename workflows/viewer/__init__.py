"""`p2g view`: the field served to a browser page that renders it live with WebGL2.

packing: the field as compact bytes (float16 where the render stays within one 8-bit level); server: the local
HTTP server and its fixed route table; content: what is shown (a saved field, or an image encoded once);
static/: the page (WebGL2 renderer with the maths of `gaussian_field.render`, zoom, pan, split view, save).
"""
