"""The base every stage stands on: files written whole, folder locks, the one
`Config` and its versions, the caption text and vocabulary, the working folder
and the devices a config gets here. Imports nothing else of radcap.
"""
