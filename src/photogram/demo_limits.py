"""Where `photogram demo` switches from the actions users' requests take to the bulk
writer: apart from photogram.demo, so the command line can say so without importing it
(and the web app, libvips and the rest with it) each time it starts."""

#: Above either of these the bulk writer is chosen unless told otherwise.
ACTIONS_MAX_USERS = 200
ACTIONS_MAX_POSTS = 1000
